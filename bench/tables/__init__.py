"""The tables of a results directory, read from its records: everything ``bench table`` and ``bench export``
write, and nothing that trains. No module here imports torch (tests/test_tables_import.py), so the tables
can be regenerated on a machine that has never trained anything.

* :mod:`bench.tables.common`: what every table shares (settings, row labels, the paired statistics, the
  cross-dataset ranking);
* :mod:`bench.tables.leaderboard`: the classification leaderboards, the results page and ``bench run``'s
  summary; :mod:`bench.tables.retrieval`: the retrieval (representation-alignment) leaderboards;
* :mod:`bench.tables.plots`: the figures; :mod:`bench.tables.papers`: numbers reported in papers next to
  ours; :mod:`bench.tables.regenerate`: the script that remakes the records;
* :mod:`bench.tables.frame`: the records as a pandas DataFrame (``bench.load_records``, ``bench export``).

They read records through :class:`bench.record.Record`. Submodules are imported on use, so importing this
package costs nothing.
"""
