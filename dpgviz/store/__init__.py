"""numpy-only storage of records: the step store and branch tree (GUI side), session files.

`session.open_session` opens the recovery journal's append-only files too (what
dpgviz.Recorder writes): store.journal_reader imports store.session, so the journal's
reader is handed to it here, where both are loaded.
"""

from dpgviz.store import journal_format, journal_reader, session

session.APPEND_ONLY_READERS[journal_format.MAGIC] = journal_reader.recover
