"""Reading shards: local tars by their DALI index files (``shard_reader``), and tars at URLs by ranged
reads (``remote``, ``remote_shards``). Everything above this package sees :class:`SampleRecord`s."""
