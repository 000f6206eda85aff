"""The DALI backend: ``fn.decoders.video`` on the GPU (``mixed``) or the CPU (``stream``), fed streams cut to
the packets a sample's clips need (``stream_cut``), with batches produced on a background thread
(``background``). Imports DALI only when a stream is built."""
