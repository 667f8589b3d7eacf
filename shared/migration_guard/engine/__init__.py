"""Engine: verdicts, checks, CPU model catalog and data, flag names, the cpu: parser, host CPU readers, the
facts dataclasses. Pure: no I/O but its own package data."""
