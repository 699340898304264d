"""Real-browser environment: observations, the action grammar, execution."""
