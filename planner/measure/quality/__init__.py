"""`planner eval`: measured quality of quantized formats against the 16-bit model, in llama.cpp, on a text (its
reports: planner.measure.reports)."""
