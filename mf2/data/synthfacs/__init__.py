"""SynthFACS: a seeded procedural renderer of face images with exact 68-point landmarks and
AU-driven deformations (SPEC §3.4). No licence, no download; the default data of the tests,
``mf2 quickstart`` and the benchmarks. It is not a substitute for real faces.

* ``face``: the face model -- identity, pose, the 68 landmarks in a face frame, AU displacements;
* ``render``: drawing one face, each AU's appearance cue at its own region, lighting, noise;
* ``dataset``: seeded sampling of a whole data set and the writer of images, manifest, stats.
"""

from mf2.data.labels import AU_INDEX
from mf2.data.stats import dataset_stats
from mf2.data.synthfacs.dataset import (
                                        INTENSITIES,
                                        PRESETS,
                                        Expression,
                                        Preset,
                                        SampleSpec,
                                        landmarks_of,
                                        manifest_row,
                                        render_spec,
                                        sample_expression,
                                        sample_specs,
                                        stored_landmarks,
                                        write_synthfacs,
)
from mf2.data.synthfacs.face import DEPTH, MEAN_IDENTITY, Identity, Pose, face_landmarks, project
from mf2.data.synthfacs.render import Capture, Cues, Lighting, capture, render

__all__ = ["Identity", "Pose", "Lighting", "Capture", "Cues", "capture", "INTENSITIES", "Expression", "SampleSpec", "Preset", "PRESETS",
           "stored_landmarks", "MEAN_IDENTITY", "DEPTH", "sample_expression",
           "face_landmarks", "project", "render", "sample_specs", "render_spec", "landmarks_of", "manifest_row",
           "write_synthfacs", "dataset_stats", "AU_INDEX"]
