"""Real music rendered offline: music21 corpus scores played through General-MIDI soundfonts.

``scores``: corpus works -> note lists; ``render``: note lists -> audio with fluidsynth;
``build``: the deterministic ``mart-bench data`` builder (style classes, cover versions, pretraining pool).
"""
