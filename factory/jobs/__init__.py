"""What a command runs: rollouts (eval, harvest), the Ray harvest, training, the loop and the default model."""
