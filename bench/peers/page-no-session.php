<?php
// page.php without a session: what a session costs is the difference.
$visits = 1;
$items = ['one', 'two', 'three'];
?>
<!doctype html>
<html><head><title>Page</title></head>
<body><h1>Hello world</h1><p>Visit <?= $visits ?></p>
<ul><?php foreach ($items as $item) { echo '<li>' . htmlspecialchars($item) . '</li>'; } ?></ul></body></html>
