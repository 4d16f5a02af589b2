"""The show: telemetry, dashboards, lecture mode and the end-of-run report. The top layer:
it may import everything below and nothing below imports it."""
