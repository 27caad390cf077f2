"""Experience data in and out: readers, writers, codecs, mixing and shuffling.

``specs`` says what the ``input``/``output`` config values mean (light: config
validation imports it); ``input`` and ``output`` build readers and writers from them;
``sources`` finds files and streams their lines; ``decode``/``codecs``/``encode`` turn a
JSON line into a SampleBatch and back (FORMAT.md). docs/architecture.md has the map.
"""
