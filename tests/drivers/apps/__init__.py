"""Small applications written against a real driver's API alone, whose tests run unchanged on
the fake driver and on the real database (tests/drivers/test_fake_*_app.py)."""
