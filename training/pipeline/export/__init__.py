"""Export: the saved model, results.json, run facts and the ONNX graph behind its parity gate."""
