"""Trust: the temperature and the "neither" score, fitted on train only."""
