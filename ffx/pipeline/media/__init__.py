"""Pixels: decoding, sampling, face detection and crops, colour spaces, images, tar records."""
