"""Widgets, one room each: header, loss_plot, grad_bars, update_sparklines, heatmap, event_log."""
