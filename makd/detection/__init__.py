"""Object detection building blocks: the COCO-format dataset with per-box aspect rows, the Faster R-CNN student with
MaKD's aspect term, COCO evaluation. The task is makd/tasks/detection.py; the COCO files and the box-id rule are
makd/formats/coco.py."""
