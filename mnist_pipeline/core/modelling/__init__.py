"""The model presets, the flow's parameters, training, prediction and the SavedModel export."""
