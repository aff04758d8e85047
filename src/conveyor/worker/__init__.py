"""Workers: the handler registry, the execution of one job, and the loop that claims them."""
