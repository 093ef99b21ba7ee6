"""The foundations every layer uses: settings, errors, atomic files, ids, progress events, text, access policy."""
