"""The reference backend: DataLoader worker processes decoding with PyAV (``stream``: the sample stream and
the workers' shared-memory rings; ``decode``: one pass over a sample's frames; ``yuv_clips``: crops cut in
YUV; ``colour``: YUV -> RGB as DALI's decoders do it). The CPU default and the correctness oracle for DALI."""
