"""Reports: matplotlib plots (PNG) and tables. matplotlib is imported only when a plot is drawn."""
