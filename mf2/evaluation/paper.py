"""The paper's reported figures (MF², Tables II-V), shown beside ours in every report."""

from mf2.data.labels import AUS, EMOTIONS

TABLE_II = {  # AU F1 (%) on MFA val
    "Exp-BLIP": [40.25, 12.63, 63.41, 53.28, 69.43, 71.76, 60.18, 46.85, 27.60, 10.27, 86.43, 25.61, 47.31],
    "ME-GraphAU": [41.94, 13.72, 55.91, 41.92, 76.57, 70.48, 53.68, 61.42, 20.13, 3.88, 85.53, 30.47, 46.30],
    "VL-FAU": [43.09, 15.86, 55.59, 49.35, 77.57, 73.51, 54.81, 60.00, 29.50, 3.72, 84.25, 31.08, 48.19],
    "MF2 (Pre-Train)": [50.17, 18.75, 73.18, 54.83, 76.58, 70.00, 52.57, 48.92, 29.06, 11.72, 88.68, 34.80, 50.77],
    "MF2 (Fine-Tuning)": [44.76, 15.64, 66.90, 50.42, 76.70, 73.17, 57.80, 54.51, 33.49, 43.02, 89.26, 34.55, 53.35],
}
TABLE_III = {  # per-class emotion accuracy (%) on MFA val
    "Exp-BLIP": [82.17, 92.74, 86.58, 86.79, 90.73, 88.30, 79.56, 50.24, 82.14],
    "HSEmotion": [80.95, 85.99, 86.82, 86.73, 85.31, 77.84, 69.05, 76.30, 81.12],
    "MF2 (Pre-Train)": [87.70, 95.50, 86.37, 86.64, 86.05, 88.09, 82.08, 55.39, 83.48],
    "MF2 (Fine-Tuning)": [84.53, 92.57, 79.95, 82.41, 83.92, 89.51, 87.14, 75.21, 84.40],
}
TABLE_IV = {  # emotion Avg (%), TT / IT (min per epoch, RTX A6000), TP (trainable parameters)
    "MF2 (Fine-Tuning, DFN)": {"avg": 84.40, "tt_min": 12.6, "it_min": 6.4, "params": 52.88e6},
    "w/o DFN": {"avg": 83.48, "tt_min": 62.3, "it_min": 5.1, "params": 373.4e6},
    "w/o Emo-VL": {"avg": 82.42, "tt_min": 8.4, "it_min": 4.5, "params": 186.7e6},
    "w/o AU-VL": {"avg": 81.87, "tt_min": 4.1, "it_min": 2.1, "params": 186.7e6},
}
TABLE_V = {"Exp-BLIP": 78.91, "MF2 (Intern-VL)": 80.07}
AU_COLUMNS, EMOTION_COLUMNS = list(AUS) + ["Avg."], list(EMOTIONS) + ["Avg."]
