"""Object detection: COCO-format data with the one box-id rule (stage 2 per box, stage 3 detection)."""
