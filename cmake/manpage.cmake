# cmake -DVFMIG=path/to/vfmig -DOUT=vfmig.1 -DVERSION=x.y.z -P cmake/manpage.cmake
# Writes the man page from the command's own help texts (`vfmig --help`, `vfmig CMD --help`),
# so every option and exit status in it is the one the binary has.
foreach(v VFMIG OUT VERSION)
  if(NOT DEFINED ${v})
    message(FATAL_ERROR "manpage.cmake: -D${v}=... is required")
  endif()
endforeach()

# Text as roff: backslashes doubled, a leading '.' or ''' escaped, lines kept as they are.
function(vfmig_roff text out)
  string(REPLACE "\\" "\\e" text "${text}")
  string(REGEX REPLACE "(^|\n)([.'])" "\\1\\\\&\\2" text "${text}")
  set(${out} "${text}" PARENT_SCOPE)
endfunction()

function(vfmig_help out)
  execute_process(COMMAND ${VFMIG} ${ARGN} OUTPUT_VARIABLE text RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "manpage.cmake: '${VFMIG} ${ARGN}' exited ${rc}")
  endif()
  vfmig_roff("${text}" text)
  set(${out} "${text}" PARENT_SCOPE)
endfunction()

vfmig_help(main --help)
string(TIMESTAMP date "%Y-%m-%d" UTC) # honours SOURCE_DATE_EPOCH (reproducible builds)
set(page ".TH VFMIG 1 \"${date}\" \"vfmig ${VERSION}\" \"User Commands\"
.SH NAME
vfmig \\- live-migrate a (simulated) GPU virtual function's VRAM with a short blackout
.SH SYNOPSIS
.B vfmig local
[\\fIOPTIONS\\fR]
.br
.B vfmig source
\\fB\\-\\-connect\\fR \\fIENDPOINT\\fR [\\fIOPTIONS\\fR]
.br
.B vfmig target
\\fB\\-\\-listen\\fR \\fIENDPOINT\\fR [\\fIOPTIONS\\fR]
.br
.B vfmig serve
\\fB\\-\\-listen\\fR \\fIENDPOINT\\fR [\\fIOPTIONS\\fR]
.br
.B vfmig
\\fB\\-\\-help\\fR | \\fB\\-\\-version\\fR
.SH DESCRIPTION
.nf
${main}.fi
")
foreach(cmd local source target serve)
  vfmig_help(sub ${cmd} --help)
  string(APPEND page ".SH \"VFMIG ${cmd}\"\n.nf\n${sub}.fi\n")
endforeach()
string(APPEND page ".SH SEE ALSO
The library: \\fIvfmig.h\\fR (installed with the development files), \\fIpkg-config vfmig\\fR,
CMake \\fIfind_package(vfmig)\\fR.
")
file(WRITE ${OUT} "${page}")
