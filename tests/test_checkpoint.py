"""training.checkpoint.trim_log: a resumed run's CSV log ends where its checkpoint does."""
from training.checkpoint import trim_log


def test_rows_past_the_checkpoint_and_a_partial_last_line_are_dropped(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text("step,loss\n20,0.5\n40,0.4\n60,0.3\n80,0.")          # crashed mid-write after step 60
    assert trim_log(log, 40) == 2
    assert log.read_text() == "step,loss\n20,0.5\n40,0.4\n"
    assert [x.name for x in tmp_path.iterdir()] == ["log.csv"]            # no temporary file left


def test_a_log_that_already_ends_at_the_checkpoint_is_left_alone(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text("step,loss\n20,0.5\n40,0.4\n")
    before = log.stat().st_mtime_ns
    assert trim_log(log, 40) == 0 and trim_log(log, 100) == 0
    assert log.read_text() == "step,loss\n20,0.5\n40,0.4\n" and log.stat().st_mtime_ns == before
    assert trim_log(tmp_path / "none.csv", 3) == 0 and not (tmp_path / "none.csv").exists()


def test_a_fresh_start_keeps_the_header_and_a_partial_header_goes(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text("step,loss\n20,0.5\n\ngarbage\n")
    assert trim_log(log, 0) == 3
    assert log.read_text() == "step,loss\n"
    log.write_text("step,lo")
    assert trim_log(log, 0) == 1 and not log.exists()
