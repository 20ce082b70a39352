"""The task layer: downstream datasets as they are distributed, read one way for every harness.

* ``covers``: cover-song collections (manifest CSV, Covers80, SHS100K-SUB) and their split by work;
* ``metrics``: cover-song retrieval metrics (MAP, P@10, MR1), recommendation metrics (HR@k, percentile
  rank) and a bootstrap interval over groups of items;
* ``gtzan``: GTZAN's genre folders and its fault-filtered split;
* ``mtat``: MagnaTagATune's annotations, top-k tags and its split by folder;
* ``nsynth``: NSynth's notes labelled by instrument family, its split, a per-class subsample;
* ``fma``: FMA-small's tracks.csv and mp3 folders, genre labels and the official split;
* ``irmas``: IRMAS' training excerpts labelled by instrument folder, split by recording;
* ``msd``: the Million Song Dataset's published top-50 tagging split (its pickled split files, read without
  running code) and the 7digital clip folders;
* ``playlists``: AOTM-2011-style playlists and the ItemKNN playlist-continuation probe (HR@10, MPR).

Data that cannot be used is a :class:`mart_upstream.errors.TaskError`. The harness adapters
(``mart_upstream.adapters``) and the benchmarks build on these modules, never on each other.

Split names here are ``SPLITS``; published split lists and HEAR task folders call ``dev`` ``valid``
(``PUBLISHED_SPLIT_NAMES``).
"""

SPLITS = ("train", "dev", "test")
PUBLISHED_SPLIT_NAMES = {"train": "train", "dev": "valid", "test": "test"}
