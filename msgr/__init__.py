"""pymsgr: Ceph AsyncMessenger (msgr v1) in Python."""
