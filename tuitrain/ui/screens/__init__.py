"""Screens: the dashboard, the gradient-flow heatmap, help, and the dialogs."""
