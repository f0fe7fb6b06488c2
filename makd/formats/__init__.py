"""The files that pass between the stages, and the rules that key them: the contract of the project.

Stage 1 writes questions files, stage 2 aspect files (per image, per class, multiple choice, per box) with their
sidecars, stage 3 reads them with the images, split files and COCO instances of a dataset. Every reader and writer
of those files is here, and nothing here imports the stages (docs/architecture.md):
- `questions` (yes/no questions files), `class_questions` (class-level ones), `class_mentions` (the label-leak rule);
- `aspect_files` (strict per-image aspect files), `tolerant_reader` (any aspect-like file, problems listed),
  `conversion` (another project's file to this project's ids), `target_sources/` (one kind of target file per
  module, joined to a split's images);
- `image_ids` (the image-id rule), `image_decode` (the one decoder), `split_files`, `coco` (instances, box ids);
- `files` (a file's text and sha256 read once, sidecars, JSON files), `errors`;
- `strict_json`, `strict_yaml` (a key written twice is an error naming both lines) and `text_lists` (one entry a
  line: BOM and CRLF removed with a warning, blank lines ignored, a repeat refused): every file the project reads
  goes through one of them.
"""
