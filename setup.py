from setuptools import find_packages, setup

setup(
    name="mart-upstream",
    version="0.1.0",
    description="Self-supervised music audio representations: MART, PEMR and baselines, "
    "with S3PRL and HEAR adapters",
    # benchmarks/ installs as mart_upstream.benchmarks (a bare "benchmarks" in site-packages would clash
    # with other projects); it imports its own modules relatively, so a source tree also runs it as
    # ``python -m benchmarks...`` without an install (the GPU kit does).
    packages=find_packages(include=["mart_upstream*", "hear_api*"])
    + ["mart_upstream." + p for p in find_packages(include=["benchmarks*"])],
    package_dir={"mart_upstream.benchmarks": "benchmarks"},
    package_data={
        "mart_upstream": [
            "adapters/s3prl/downstream/*/*.yaml",
            "tasks/gtzan_splits/*.txt",  # GTZAN's fault-filtered split
            "checkpoints/*.ckpt",  # packaged mart, pemr, simclr (mart-bench run --export), with model cards
            "checkpoints/*.md",
            "configs/*.yaml",  # CPU-sized settings (mart-pretrain --config cpu; the offline benchmark's runs)
        ],
    },
    python_requires=">=3.9",
    install_requires=[
        "torch>=2.1",
        "torchaudio>=2.1",
        "numpy",
        "soundfile>=0.12",
        "tqdm",
        "pyyaml",
    ],
    extras_require={
        "test": ["pytest"],
        "tensorboard": ["tensorboard"],
        # cover-song search and plots; the offline benchmark's score rendering
        "bench": ["faiss-cpu", "matplotlib", "scikit-learn", "music21", "pyfluidsynth", "pretty_midi",
                  "librosa"],
        # mart-export --format onnx (onnx, onnxscript: torch's exporter) and running the export (onnxruntime)
        "onnx": ["onnx", "onnxscript", "onnxruntime"],
    },
    entry_points={
        "console_scripts": [
            "mart-pretrain=mart_upstream.train.cli:main",
            "s3prl=mart_upstream.adapters.s3prl.launcher:main",
            "mart-hear-task=mart_upstream.adapters.hear.tasks:main",
            "mart-cover-song=mart_upstream.benchmarks.cover_song.cli:main",
            "mart-bench=mart_upstream.benchmarks.mart_bench:main",
            "mart-embed=mart_upstream.embed:main",
            "mart-export=mart_upstream.export:main",
        ]
    },
)
