"""STAR network: action assembler (attention, permissive coverage, RAM) and LSTM label generator."""
