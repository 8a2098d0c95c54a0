"""MF² (paper §III-A): a BLIP-2-style Q-Former shared by the Emo-VL and AU-VL branches."""
