<?php
// The same page as session_counter.php without a session: what a session costs is the difference.
header('Content-Type: text/plain');
echo "visit 1\n";
