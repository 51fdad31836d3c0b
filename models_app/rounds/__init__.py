"""Rounds: one pass of the product's circle (jobs → campaign → judgments → labels →
retraining → gate → promotion) as one database record that links what it made."""
