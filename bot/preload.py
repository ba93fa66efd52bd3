"""What every worker process needs, loaded once by the fork server the workers start from
(`bot.pool`), then shared by each of them instead of loaded by each: the parsing and reading code,
the lemmatizer's French and English dictionaries (a quarter of a second to a second each), and
dateparser's French and English locales. Importing this module is all it does."""

from __future__ import annotations

import simplemma
from dateparser.date import DateDataParser

from bot import pool  # noqa: F401 - what a worker runs, with everything it imports

for _word, _lang in (("réglé", "fr"), ("paid", "en")):
    simplemma.lemmatize(_word, lang=_lang)
DateDataParser(languages=["fr", "en"]).get_date_data("15 avril")
