"""The message path's pure core: what to send and what to answer, from a decoded request, the consent answer and the time."""
