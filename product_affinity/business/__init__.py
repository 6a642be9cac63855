"""Business alignment, computed: the KPI tree of the North Star, and the backtest of the cross-sell score."""
