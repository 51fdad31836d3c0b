"""Pure computation on images and tensors: no Django import anywhere below this package."""
