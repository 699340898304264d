"""Training: trajectories to SFT examples (`sft`), LoRA fine-tuning (`finetune`), model folders
(`models`: built-in models, adapters, merging).
"""
