"""The LTD paper's numbers (arXiv 2603.01639; ../shared/PAPER.md) that the analysis prints beside
ltd's own: references to compare with, never results of this code."""

# Table 2 (Vicuna-13B, size policy only): mean speed-up and tau per reward.
REWARDS = {"throughput": (4.13, 6.84), "acceptance": (3.59, 6.89), "time_cost": (3.45, 5.66)}

# Table 4 (Vicuna-13B): mean speed-up per component; EAGLE-3's default tree 4.11.
COMPONENTS = {"full": 4.32, "no_coadapt": 4.20, "size_only": 4.13, "depth_only": 4.29}
EAGLE3_VICUNA = 4.11

# Table 5 (temperature 1): mean speed-up of LTD and of its reference (EAGLE-3 or the grid search).
TEMPERATURE_1 = {"Llama-3.1-8B": (3.01, 2.98), "Vicuna-13B": (3.62, 3.44), "DeepSeek-R1-Distill-Llama-8B": (3.15, 3.07),
                 "Qwen3-14B": (2.21, 2.10), "Qwen3-32B": (2.26, 1.66)}

# MMLU: subjects (of 57) where LTD beat EAGLE-3, and the mean gain.
MMLU_AHEAD, MMLU_SUBJECTS, MMLU_GAIN = 54, 57, 0.05
