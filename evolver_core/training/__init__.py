"""Training: trajectories to SFT examples (`sft`), LoRA fine-tuning (`finetune`), the models a
stage's identity records (`identity`).
"""
