"""The speech audit: prompt suites with mirrored controls, the classifier of answers, and the audit run."""
