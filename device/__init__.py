"""The GPU check for a machine without Docker or network: the offline bundle (``bundle.py``, built with
``make device-bundle``), its installer (``install.py``) and the check itself (``check.py``). See docs/gpu.md
"The GPU check without Docker or network". Outside the library: no library package imports this."""
