"""The methods' loss functions (torch): ``losses/<name>.py`` holds the loss that ``methods/<name>.py`` registers."""
