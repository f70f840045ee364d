"""numpy-only storage of records: the step store and branch tree (GUI side), session files.

`session.open_session` opens the recovery journal's append-only files too (what
dpgviz.Recorder writes): store.journal imports store.session, so the journal's reader
is handed to it here, where both are loaded.
"""

from dpgviz.store import journal, session

session.APPEND_ONLY_READERS[journal.MAGIC] = journal.recover
