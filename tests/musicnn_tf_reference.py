"""MusiCNN's own TensorFlow graph on given waveforms: the reference of tests/test_musicnn.py.

    TF_USE_LEGACY_KERAS=1 python tests/musicnn_tf_reference.py IN.npz OUT.npz [MODEL]

IN.npz holds 16 kHz float32 waveforms ``clip0``, ``clip1``, ... The log-mel patches are computed as
``musicnn.extractor.batch_data`` computes them (librosa, float16, log10(10000 x + 1), non-overlapping
187-frame patches; a clip shorter than one patch zero padded to 47872 samples first, as the port does),
the graph of ``musicnn.models.define_model`` is built once and restored from the package's checkpoint,
and every layer the extractor returns is written per clip (``clip0/penultimate``, ...), with the log-mel
patches (``clip0/logmel``) and every variable as TensorFlow's own reader sees it (``var/<name>``).
Run in its own process: TensorFlow's graph mode and globals stay out of the caller.
"""
import os
import sys

import numpy as np


def main(src: str, dst: str, model: str = "MTT_musicnn") -> None:
    import librosa
    import tensorflow as tf
    from musicnn import configuration as config
    from musicnn import models

    tf.compat.v1.disable_eager_execution()
    n_frames = librosa.time_to_frames(3, sr=config.SR, n_fft=config.FFT_SIZE, hop_length=config.FFT_HOP) + 1
    names = ["taggram", "timbral", "temporal", "cnn1", "cnn2", "cnn3", "mean_pool", "max_pool", "penultimate"]
    with tf.name_scope("model"):
        x = tf.compat.v1.placeholder(tf.float32, [None, n_frames, config.N_MELS])
        is_training = tf.compat.v1.placeholder(tf.bool)
        y, *layers = models.define_model(x, is_training, model, len(config.MTT_LABELS))
        outputs = [tf.nn.sigmoid(y)] + layers
    prefix = os.path.join(os.path.dirname(models.__file__), model) + "/"
    out = {}
    with tf.compat.v1.Session() as sess:
        tf.compat.v1.train.Saver().restore(sess, prefix)
        clips = np.load(src)
        for key in sorted(clips.files):
            audio = clips[key].astype(np.float32)
            if len(audio) < n_frames * config.FFT_HOP:
                audio = np.pad(audio, (0, n_frames * config.FFT_HOP - len(audio)))
            # extractor.batch_data, from an array instead of a file
            rep = librosa.feature.melspectrogram(y=audio, sr=config.SR, hop_length=config.FFT_HOP,
                                                 n_fft=config.FFT_SIZE, n_mels=config.N_MELS).T
            rep = rep.astype(np.float16)
            with np.errstate(over="ignore"):
                rep = np.log10(10000 * rep + 1)
            patches = np.stack([rep[t : t + n_frames] for t in range(0, rep.shape[0] - n_frames + 1, n_frames)])
            values = sess.run(outputs, feed_dict={x: patches, is_training: False})
            out[f"{key}/logmel"] = patches.astype(np.float32)
            for name, v in zip(names, values):
                out[f"{key}/{name}"] = np.asarray(v).reshape(len(patches), *np.asarray(v).shape[1:])
    reader = tf.compat.v1.train.NewCheckpointReader(prefix)
    for name in reader.get_variable_to_shape_map():
        if "/Adam" not in name and not name.endswith("_power"):
            out[f"var/{name}"] = reader.get_tensor(name)
    np.savez(dst, **out)


if __name__ == "__main__":
    main(*sys.argv[1:])
