"""The Gradio Space, a package: ``from space import inference`` in training, tests and benchmarks alike, and
``from space.app import main`` in the Space's own ``app.py`` (``launcher.py``, published at the Space's root
beside this package). Importing any module changes no global state; ``app.main()`` does the set-up.
"""
