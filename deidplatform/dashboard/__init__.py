"""The operator dashboard (staff only): rounds, campaigns, raters, proxy versions and jobs,
with server-rendered plots and an audit log of every action taken from it."""
