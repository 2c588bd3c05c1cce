"""Fine-tuning on UCF101-layout folders: datasets and their checks, the Trainer wiring, reports."""
