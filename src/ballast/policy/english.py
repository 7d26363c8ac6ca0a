"""English the checks and filters rely on, in one place: word lists and the table of units a number can carry.

What is policy-specific lives in policy.yaml; what is here is the language those policies are written in.
"""

from __future__ import annotations

# The most frequent English function words: any English passage of some length holds several of them
# (curation's language check counts their share).
FUNCTION_WORDS = frozenset("""a about after all also an and any are as at be because been but by can could do does
for from had has have he her him his how i if in into is it its just me more my no not now of on one only or our
out over please she so some than that the their them then there these they this to up us was we were what when
where which who why will with would you your""".split())

# Evol-Instruct's stop words (WizardLM's elimination rule 3: a response of only punctuation and stop words), kept
# as the paper's list: a different list would eliminate different evolutions.
STOP_WORDS = frozenset(["a", "about", "above", "after", "again", "against", "all", "am", "an", "and", "any", "are", "aren't", "as", "at", "be", "because", "been", "before", "being", "below", "between", "both", "but", "by", "can", "can't", "cannot", "could", "couldn't", "did", "didn't", "do", "does", "doesn't", "doing", "don't", "down", "during", "each", "few", "for", "from", "further", "had", "hadn't", "has", "hasn't", "have", "haven't", "having", "he", "he'd", "he'll", "he's", "her", "here", "here's", "hers", "herself", "him", "himself", "his", "how", "how's", "i", "i'd", "i'll", "i'm", "i've", "if", "in", "into", "is", "isn't", "it", "it's", "its", "itself", "let's", "me", "more", "most", "mustn't", "my", "myself", "no", "nor", "not", "of", "off", "on", "once", "only", "or", "other", "ought", "our", "ours", "ourselves", "out", "over", "own", "same", "shan't", "she", "she'd", "she'll", "she's", "should", "shouldn't", "so", "some", "such", "than", "that", "that's", "the", "their", "theirs", "them", "themselves", "then", "there", "there's", "these", "they", "they'd", "they'll", "they're", "they've", "this", "those", "through", "to", "too", "under", "until", "up", "very", "was", "wasn't", "we", "we'd", "we'll", "we're", "we've", "were", "weren't", "what", "what's", "when", "when's", "where", "where's", "which", "while", "who", "who's", "whom", "why", "why's", "with", "won't", "would", "wouldn't", "you", "you'd", "you'll", "you're", "you've", "your", "yours", "yourself", "yourselves", "ok", "okay", "yes"])

# Canonical units, as facts and claims are compared: weeks count as days and years as months, so "two weeks" and
# "24-month" compare directly. unit -> (canonical unit, multiplier).
UNIT_SCALE = {"business_days": ("business_days", 1), "days": ("days", 1), "weeks": ("days", 7),
              "months": ("months", 1), "years": ("months", 12), "usd": ("usd", 1)}
