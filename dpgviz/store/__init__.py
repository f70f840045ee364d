"""numpy-only storage of records: the step store and branch tree (GUI side), session files, the recovery journal."""
