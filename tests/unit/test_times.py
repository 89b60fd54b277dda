from hub.times import utc_day, utc_iso, utc_words

T = 1795424400.4  # 2026-11-23T09:00:00.4Z


def test_iso_with_z_in_seconds_or_minutes():
    assert utc_iso(T) == "2026-11-23T09:00:00Z"
    assert utc_iso(T, "minutes") == "2026-11-23T09:00Z"


def test_words_and_day():
    assert utc_words(T) == "2026-11-23 09:00 UTC"
    assert utc_day(T) == "2026-11-23"
