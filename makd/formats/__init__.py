"""The files that pass between the stages, and the rules that key them: the contract of the project.

Stage 1 writes questions files, stage 2 aspect files (per image, per class, multiple choice, per box) with their
sidecars, stage 3 reads them with the images, split files and COCO instances of a dataset. Every reader and
writer of those files is here, and nothing here imports the stages: see docs/architecture.md for the modules.
"""
