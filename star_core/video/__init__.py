"""Video to two-stream I3D features: decode, resample, crop, optical flow, I3D."""
